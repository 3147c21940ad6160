"""The node agent: OVS setup, CNI server and plugin shim, netns/veth plumbing."""
