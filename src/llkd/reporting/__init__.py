"""Reports: the run report (report.md and its plots), the teacher's reliability, above the
student whose results they read. The metrics they compute with sit low, in llkd.evaluation."""
