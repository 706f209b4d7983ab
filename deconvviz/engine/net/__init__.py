"""The traced network: trace, ops, the graph with node names and block numbers, geometry."""
