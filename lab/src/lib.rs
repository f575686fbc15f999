//! Network-namespace lab: a node with pods, servers and probes.
