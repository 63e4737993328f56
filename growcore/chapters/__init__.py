"""Per-chapter parameter specifications and experiment definitions (configuration, not maths).

Each chapter module holds the specification of its notebook's parameters (checked before any
compute) and the configurations of its experiments, so the notebooks stay free of library
code and the tests can check the same definitions.
"""
