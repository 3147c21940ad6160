"""CRDs, RBAC and deployment manifests (YAML files shipped as package data)."""
