"""The cluster: authenticated links, SWIM membership, replicated state, routing."""
