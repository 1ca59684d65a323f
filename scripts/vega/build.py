#!/usr/bin/env python3
"""Regenerate the offline page template of `dvc plots` (scripts/vega/offline.html) from npm.

`dvc plots show/diff` writes an HTML page that loads Vega, Vega-Lite and Vega-Embed from a CDN,
so offline its charts stay blank. This page inlines the three libraries' browser builds, pinned
below with their npm integrity hashes, and .dvc/config points DVC to it (plots.html_template).
Their licenses, and those of the packages they bundle, go to scripts/vega/LICENSES.

    python scripts/vega/build.py      # needs npm and the npm registry; writes both files

To move to newer versions, change PINNED, run it once with --update-integrity, and check the
page with tests/test_dvcplots.py. The versions are the majors dvc-render's own templates use
(Vega-Lite v5 schema).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PINNED = {  # package: (version, its npm tarball's sha512 integrity)
    "vega": (
        "5.33.1",
        "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
    ),
    "vega-lite": (
        "5.23.0",
        "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
    ),
    "vega-embed": (
        "6.29.0",
        "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
    ),
}
BUILDS = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js",
          "vega-embed": "build/vega-embed.min.js"}  # fmt: skip
# Dependencies the browser builds do not carry: command-line tools and Node-only loaders.
NODE_ONLY = {
    "yargs": "vega-lite's command-line tools",
    "node-fetch": "vega-loader under Node (the browser build uses the browser's fetch)",
    "commander": "d3-dsv's command-line tools",
    "iconv-lite": "d3-dsv's command-line tools",
    "rw": "d3-dsv's command-line tools",
    "vega-typings": "TypeScript types only",
    "@types/estree": "TypeScript types only",
}
# dvc-render's placeholders: DVC replaces each wherever it occurs in the page.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")
# The vega package ships no license file (package.json: BSD-3-Clause); this is the text of its
# repository's LICENSE (github.com/vega/vega), used for the vega/vega packages that ship none.
VEGA_REPO_LICENSE = """\
Copyright (c) 2013, Trifacta Inc.
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

* Redistributions of source code must retain the above copyright notice, this
  list of conditions and the following disclaimer.

* Redistributions in binary form must reproduce the above copyright notice,
  this list of conditions and the following disclaimer in the documentation
  and/or other materials provided with the distribution.

* Neither the name of Trifacta Inc. nor the names of its contributors may be
  used to endorse or promote products derived from this software without
  specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE."""

PAGE = """\
<!DOCTYPE html>
<!-- The page of `dvc plots show/diff` with no network: {libraries} inlined from their npm
     packages (BSD-3-Clause; licenses in scripts/vega/LICENSES). Written by
     scripts/vega/build.py: edit that, not this file. -->
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def npm(*args: str, cwd: Path) -> str:
    return subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(work: Path, update: bool) -> dict[str, str]:
    """The three browser builds, from the pinned tarballs (integrity checked)."""
    sources = {}
    for name, (version, expected) in PINNED.items():
        (tarball,) = json.loads(npm("pack", "--json", f"{name}@{version}", cwd=work))
        path = work / tarball["filename"]
        found = integrity(path)
        if found != expected and not update:
            sys.exit(f"{name}@{version}: integrity {found}, pinned {expected or '(none)'}")
        if update:
            print(f'    "{name}": ("{version}", "{found}"),')
        with tarfile.open(path) as tar:
            member = tar.extractfile(f"package/{BUILDS[name]}")
            sources[name] = member.read().decode("utf-8")
    return sources


def script_tag(name: str, source: str) -> str:
    if re.search(r"</script", source, re.IGNORECASE):
        sys.exit(f"{name}: its build holds '</script': it cannot be inlined as is")
    if any(p in source for p in PLACEHOLDERS):
        sys.exit(f"{name}: its build holds a placeholder of dvc-render's page")
    return f"    <script>/* {name} {PINNED[name][0]} */\n{source.strip()}\n    </script>"


def licenses(work: Path) -> str:
    """LICENSES: each license text once, after the packages it covers: the three libraries
    and the runtime dependencies their browser builds bundle (npm's tree of them)."""
    npm("init", "-y", cwd=work)
    specs = [f"{name}@{version}" for name, (version, _) in PINNED.items()]
    npm("install", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev", *specs, cwd=work)
    modules = work / "node_modules"
    seen: dict[str, dict] = {}
    todo = list(PINNED)
    while todo:
        name = todo.pop()
        if name in seen or name in NODE_ONLY:
            continue
        seen[name] = json.loads((modules / name / "package.json").read_text())
        todo += list(seen[name].get("dependencies", {}))
    texts: dict[str, list[str]] = {}
    for name in sorted(seen):
        meta = seen[name]
        files = sorted(p for p in (modules / name).iterdir() if re.match(r"(?i)licen[cs]e", p.name))
        repo = json.dumps(meta.get("repository", ""))
        if files:
            text = files[0].read_text(encoding="utf-8").strip()
        elif "vega/vega" in repo:
            text = VEGA_REPO_LICENSE + "\n\n(the vega repository's LICENSE: the package ships none)"
        else:
            text = f"{meta.get('license')} (package.json; the package ships no license file)"
        texts.setdefault(text, []).append(f"{name}@{meta['version']} ({meta.get('license')})")
    out = [
        "Licenses of the code inlined in scripts/vega/offline.html: "
        + ", ".join(f"{n} {v}" for n, (v, _) in PINNED.items())
        + " (their build/*.min.js from npm) and the npm packages those builds bundle.",
        "Left out as not in the browser builds: "
        + "; ".join(f"{k} ({v})" for k, v in NODE_ONLY.items())
        + ". Written by scripts/vega/build.py.",
    ]
    for text, packages in texts.items():
        out += ["", "=" * 78, *packages, "-" * 78, text]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--update-integrity",
        action="store_true",
        help="print the tarballs' integrity for PINNED instead of checking it",
    )
    args = parser.parse_args()  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sources = fetch(work, args.update_integrity)
        scripts = "\n".join(script_tag(name, source) for name, source in sources.items())
        libraries = ", ".join(f"{n} {v}" for n, (v, _) in PINNED.items())
        page = PAGE.format(libraries=libraries, scripts=scripts)
        (HERE / "offline.html").write_text(page, encoding="utf-8")
        (HERE / "LICENSES").write_text(licenses(work), encoding="utf-8")
    print(f"scripts/vega/offline.html: {len(page.encode()):,} bytes ({libraries})")


if __name__ == "__main__":
    main()
