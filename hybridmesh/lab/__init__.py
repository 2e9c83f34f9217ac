"""Nodes and pods from real kernel objects (netns, veth, bridges, cgroups) and their processes."""
