"""Regenerates the committed generated files: rendered manifests and the PrometheusRule.

Run through `bash deploy/check.sh --update`, which provides the pinned kubectl.
"""

from common import MONITORING, RENDERED, RENDERS, prometheusrule_text, rendered_text


def write(path, text: str) -> None:
    old = path.read_text() if path.exists() else None
    if old != text:
        path.write_text(text)
        print(f"updated {path}")


def main() -> None:
    # The PrometheusRule first: the monitoring render includes it.
    write(MONITORING / "prometheusrule.yaml", prometheusrule_text())
    RENDERED.mkdir(exist_ok=True)
    for name in RENDERS:
        write(RENDERED / f"{name}.yaml", rendered_text(name))


if __name__ == "__main__":
    main()
