"""The traced network: trace, ops, nodes, running them, the graph with node names and block
numbers (stack, layers), the network a command hands down, and geometry (receptive fields,
cones, windows, patches) in one place."""
