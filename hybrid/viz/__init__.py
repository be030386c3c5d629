"""Figures a person would rather look at than read: errors against time, space-time
plots, vorticity snapshots, cluster order parameters, ensemble fan charts, spread
against error, rank histograms, energy of long rollouts. Each function writes one PNG
(matplotlib, Agg backend) and returns nothing or its path."""

from ._fields import clusters_figure as clusters_figure
from ._fields import error_figure as error_figure
from ._fields import space_time_figure as space_time_figure
from ._fields import vorticity_figure as vorticity_figure
from ._stability import energy_figure as energy_figure
from ._uq import fan_chart as fan_chart
from ._uq import rank_frequencies as rank_frequencies
from ._uq import rank_histogram_chart as rank_histogram_chart
from ._uq import spread_error_chart as spread_error_chart
from ._uq import spread_error_series as spread_error_series
from ._uq import write_uq_figures as write_uq_figures
