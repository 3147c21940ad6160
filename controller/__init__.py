"""Pure translation: Kubernetes objects -> desired OVN NB rows, plus IPAM. No IO here."""
