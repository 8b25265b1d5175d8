"""Write services/<name>/Dockerfile from deploy/docker/Dockerfile.template (one template,
seven truthful Dockerfiles: ENTRYPOINT and EXPOSE cannot take build arguments).

    python deploy/docker/render_dockerfiles.py          # write
    python deploy/docker/render_dockerfiles.py --check  # exit 1 when one is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "docker" / "Dockerfile.template"
# service -> (http port, grpc port), as in services/<name>/src/*/settings.py
PORTS = {
    "directory": (8001, 50051),
    "leads": (8002, 50052),
    "customers": (8003, 50053),
    "sales": (8004, 50054),
    "service-desk": (8005, 50055),
    "marketing": (8006, 50056),
    "analytics": (8007, 50057),
}


def render(service: str) -> str:
    http, grpc = PORTS[service]
    text = TEMPLATE.read_text()
    for key, value in (("@SERVICE@", service), ("@HTTP_PORT@", str(http))):
        text = text.replace(key, value)
    return text.replace("@GRPC_PORT@", str(grpc))


def main(argv: list[str]) -> int:
    stale = []
    for service in PORTS:
        path = ROOT / "services" / service / "Dockerfile"
        text = render(service)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text)
    if stale:
        print("stale Dockerfiles (run deploy/docker/render_dockerfiles.py):", *stale)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
