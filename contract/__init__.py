"""What the controller and the node agent agree on, imported by both (and by the sandbox,
the CLI and the tests): the annotation codec (podnetwork) and the cluster defaults
(defaults). Pure and dependency-free: it imports nothing of kovn's other packages."""
