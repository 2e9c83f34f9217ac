"""Demo workloads shipped with the package: a fast HTTP service with a call graph, a load client."""
