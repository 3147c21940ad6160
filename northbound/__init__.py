"""OVN northbound access on ovsdbapp: names, typed rows, plan/apply reconciler, inspection."""
