# conf.py needs sphinx-astropy; it is not a module to doctest.
collect_ignore = ["conf.py"]
