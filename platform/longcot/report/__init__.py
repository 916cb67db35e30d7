"""Run report and trace inspector: static, self-contained HTML in each run directory."""

from longcot.report.render import build_report

__all__ = ["build_report"]
