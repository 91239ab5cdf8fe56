"""Make `dvc plots show` and `dvc plots diff` work offline: DVC's page template with Vega inlined.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so without the
network its plots stay blank. This writes a page template for DVC (its
``--html-template``, or the ``plots.html_template`` setting) whose only script is those
three libraries as vl-convert-python bundles them, installed from PyPI with the other
pins: nothing is copied by hand, and the page asks the network for nothing. `make`
writes it into .venv and sets it in the repository's local DVC config.

    python -m tools.offline_plots --output .venv/share/dvc-plots-offline.html
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import vl_convert

# The Vega-Lite major version of DVC's own plot templates ($schema .../vega-lite/v5.json).
VEGA_LITE_VERSION = "5.21"
# DVC fills these in (plain text replacement); the bundle must not contain them.
DVC_PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- vega-embed, vega-lite and vega, bundled by vl-convert-python: no network needed -->
    <script>BUNDLE</script>
    <style>
        table { border-spacing: 15px; }
        /* Image plots (one per revision in `dvc plots diff`) wrap rather than overflow the page. */
        div[id] { white-space: normal !important; }
        div[id] > div { max-width: calc(100% - 16px); vertical-align: top; }
        img { max-width: 100%; height: auto; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def offline_page_template(vega_lite_version: str = VEGA_LITE_VERSION) -> str:
    """Return DVC's page template with vega, vega-lite and vega-embed in an inline script."""
    bundle = vl_convert.javascript_bundle(vl_version=vega_lite_version)
    # An inline script ends at the first "</script", whatever the JavaScript around it.
    bundle = re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)
    present = [placeholder for placeholder in DVC_PLACEHOLDERS if placeholder in bundle]
    if present:
        raise ValueError(f"the bundle contains DVC's placeholders {present}")
    return PAGE.replace("BUNDLE", bundle)


def main() -> None:
    """Write the template to ``--output``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, required=True, help="the HTML template to write")
    arguments = parser.parse_args()
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(offline_page_template(), encoding="utf-8")
    print(f"wrote {arguments.output}: DVC's plots page with vega, vega-lite and vega-embed inlined")


if __name__ == "__main__":
    main()
