"""The OVS/OVN sandbox used by tests, the demo and benchmarks (real daemons, netns nodes)."""
