"""Builder options given on a benchmark's command line as ``name=value``."""


def parse_options(items):
    """``['flux_factor=auto', 'mm_scale=0']`` -> a dict; values parsed as Python literals.

    A value that is not a literal (``auto``) stays a string.
    """
    import ast
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out
