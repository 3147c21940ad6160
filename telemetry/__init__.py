"""What the controller and the node agent expose about themselves: /metrics, /healthz, /readyz.

Imports nothing of kovn (like kube/): each component defines its own metrics and probes
(operators/metrics.py, node/metrics.py) and serves them through telemetry.server.
"""
