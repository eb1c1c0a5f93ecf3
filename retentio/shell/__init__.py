"""The application shell: the Typer CLI and the jobs it runs (train, score, cycle).

The shell is the top layer: it may import every other package of retentio; nothing imports it.
"""
