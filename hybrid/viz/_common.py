"""Matplotlib without a display."""


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (files, no window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
