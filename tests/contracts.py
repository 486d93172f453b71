"""File formats the tests hold the code to, written down once (the literal
contract, not imported from the code under test)."""

#: columns of the simulator's truth file ``cells.csv``
CELLS_CSV_COLUMNS = [
    "frame",
    "t_s",
    "cell_id",
    "parent_id",
    "x_um",
    "y_um",
    "radius_um",
    "state",
    "dose",
    "target",
]
