# Sphinx configuration for crcombine (sphinx-astropy v3 theme).
import datetime
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
})
nitpicky = True
nitpick_ignore = []
for line in (Path(__file__).parent / "nitpick-exceptions.txt").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
        dtype, target = line.split(None, 1)
        nitpick_ignore.append((dtype, target.strip()))

html_title = f"{project} v{release}"
html_theme_options = {"github_url": ""}
plot_formats = ["png", "hires.png", "pdf"]
plot_html_show_source_link = True
