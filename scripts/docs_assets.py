"""Take the files of /docs and /redoc (Swagger UI, ReDoc, their fonts) from pinned npm packages.

The service serves these files itself (service/api/docs_ui.py), so the API pages work where no
CDN is reachable (training clusters cut off from the internet). They are not written by hand:
service/api/docs_assets/manifest.json pins each npm package (version and the tarball's sha512
integrity, as the npm registry publishes it) and names the files taken from it; this script
downloads each tarball, checks its integrity, extracts those files next to the manifest and
records each file's sha256 there. tests/api/test_docs_assets.py checks the shipped files against
those digests, so a file changed by hand fails the tests. The files are committed: installing
the package, building the wheel or the Docker image needs no network and no step of its own.

    python scripts/docs_assets.py                      # fetch the pinned versions again
    python scripts/docs_assets.py --check              # fetch, and fail if any shipped file differs
    python scripts/docs_assets.py --bump redoc@2.5.4   # pin another version (integrity read from
                                                       # the registry), then fetch
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "service" / "api" / "docs_assets"
MANIFEST = ASSETS / "manifest.json"
REGISTRY = "https://registry.npmjs.org"


def registry_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=60) as reply:
        return json.load(reply)  # type: ignore[no-any-return]


def tarball_url(name: str, version: str) -> str:
    """The registry's tarball address: @scope/pkg -> @scope/pkg/-/pkg-1.2.3.tgz."""
    return f"{REGISTRY}/{name}/-/{name.rpartition('/')[2]}-{version}.tgz"


def integrity_of(data: bytes) -> str:
    """npm's Subresource Integrity string of a tarball (sha512, base64)."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch_package(name: str, pin: dict[str, Any]) -> dict[str, bytes]:
    """The pinned files of one package, {destination: bytes}, after checking the integrity."""
    with urllib.request.urlopen(tarball_url(name, pin["version"]), timeout=120) as reply:
        data = reply.read()
    if integrity_of(data) != pin["integrity"]:
        raise SystemExit(f"{name}@{pin['version']}: tarball integrity {integrity_of(data)} is not "
                         f"the pinned {pin['integrity']}")
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member, destination in pin["files"].items():
            extracted = archive.extractfile(member)
            if extracted is None:
                raise SystemExit(f"{name}@{pin['version']} has no file {member}")
            files[destination] = extracted.read()
    return files


def bump(manifest: dict[str, Any], spec: str) -> None:
    """Pin NAME@VERSION, with the integrity the registry publishes for it."""
    name, _, version = spec.rpartition("@")
    if name not in manifest["packages"]:
        raise SystemExit(f"{name!r} is not a package of {MANIFEST.name}; add its entry first")
    published = registry_json(f"{REGISTRY}/{name}/{version}")
    manifest["packages"][name].update(version=version, integrity=published["dist"]["integrity"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a shipped file differs from its package")
    parser.add_argument("--bump", action="append", default=[], metavar="NAME@VERSION")
    args = parser.parse_args(argv)
    manifest = json.loads(MANIFEST.read_text())
    for spec in args.bump:
        bump(manifest, spec)
    fetched: dict[str, bytes] = {}
    for name, pin in manifest["packages"].items():
        fetched |= fetch_package(name, pin)
        print(f"{name}@{pin['version']}: {len(pin['files'])} file(s)")
    if args.check:
        differing = [path for path, data in fetched.items()
                     if not (ASSETS / path).is_file() or (ASSETS / path).read_bytes() != data]
        for path in differing:
            print(f"differs from its package: {path}", file=sys.stderr)
        return 1 if differing else 0
    for path in {p for p in manifest["sha256"]} - set(fetched):  # no longer pinned
        (ASSETS / path).unlink(missing_ok=True)
    for path, data in fetched.items():
        (ASSETS / path).parent.mkdir(parents=True, exist_ok=True)
        (ASSETS / path).write_bytes(data)
    manifest["sha256"] = {path: hashlib.sha256(data).hexdigest()
                          for path, data in sorted(fetched.items())}
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
