"""Plots are optional in the benchmark scripts: the JSON is the result, the PNG a view of it."""


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: plot skipped")
        return None
    return plt
