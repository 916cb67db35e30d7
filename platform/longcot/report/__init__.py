"""Run report and trace inspector: static, self-contained HTML in each run directory (``render.build_report``)."""
