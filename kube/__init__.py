"""The Kubernetes API client shared by every kovn component (imports nothing of kovn)."""
