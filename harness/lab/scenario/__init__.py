"""What a run is asked to do and to show: the scenario's typed specs, their loading and
validation, and the expectations a plan judges against."""
