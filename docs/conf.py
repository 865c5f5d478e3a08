# Sphinx configuration for crcombine (sphinx-astropy v3 theme).
import datetime
import os
import sys
import tomllib
from importlib import metadata
from pathlib import Path

try:
    from sphinx_astropy.conf.v3 import *  # noqa: F401,F403
except ImportError:
    print("ERROR: the documentation requires the sphinx-astropy package "
          "(pip install -e '.[docs]')")
    sys.exit(1)

with (Path(__file__).parents[1] / "pyproject.toml").open("rb") as fh:
    project_meta = tomllib.load(fh)["project"]

project = project_meta["name"]
author = project_meta["authors"][0]["name"]
copyright = f"{datetime.datetime.now().year}, {author}"
release = metadata.version(project)
version = ".".join(release.split(".")[:2])

# Changelog entries cite our own issue numbers, not a GitHub repository.
extensions.remove("sphinx_astropy.ext.changelog_links")  # noqa: F405
intersphinx_mapping.update({  # noqa: F405
    "ccdproc": ("https://ccdproc.readthedocs.io/en/latest/", None),
    "photutils": ("https://photutils.readthedocs.io/en/stable/", None),
    "reproject": ("https://reproject.readthedocs.io/en/stable/", None),
    "dask": ("https://docs.dask.org/en/stable/", None),
    "distributed": ("https://distributed.dask.org/en/stable/", None),
})
nitpicky = True
nitpick_ignore = []
nitpick_ignore_regex = []
# CI has no network beyond the package index, so it builds with
# CRCOMBINE_DOCS_OFFLINE=1: no intersphinx inventories, and references to other
# packages are not checked (ours still are, with -W).
if os.environ.get("CRCOMBINE_DOCS_OFFLINE"):
    intersphinx_mapping.clear()  # noqa: F405
    nitpick_ignore_regex += [
        (r"py:.*", r"(~?)(numpy|astropy|scipy|matplotlib|ccdproc|photutils|reproject|dask|"
                   r"distributed)(\..*)?"),
        (r"py:.*", r"(ValueError|TypeError|OSError|FileNotFoundError|FileExistsError|"
                   r"PermissionError|KeyError|ImportError|str|int|float|bool|dict|list|tuple|"
                   r"callable)"),
    ]
for line in (Path(__file__).parent / "nitpick-exceptions.txt").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
        dtype, target = line.split(None, 1)
        nitpick_ignore.append((dtype, target.strip()))

html_title = f"{project} v{release}"
html_theme_options = {"github_url": ""}
plot_formats = ["png", "hires.png", "pdf"]
plot_rcparams = {"figure.dpi": 80, "savefig.dpi": 80}
plot_apply_rcparams = True
plot_html_show_source_link = True
