"""Studies: a TOML grid of Flower simulations, run resumably, summarised into a report with plots.

fedcompress study run femnist_uplink [--quick] [--out DIR] [--only PATTERN]
fedcompress study report runs/studies/femnist_uplink [--out DIR]
"""

from fedcompress.studies.report import write_report
from fedcompress.studies.runner import run_study
from fedcompress.studies.spec import Cell, SpecError, Study, load_study

__all__ = ["Cell", "SpecError", "Study", "load_study", "run_study", "write_report"]
