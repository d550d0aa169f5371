"""Reports on datasets and runs."""

from synthloop.report.contact_sheet import annotated_tile, contact_sheet, load_dataset, write_contact_sheet

__all__ = ["annotated_tile", "contact_sheet", "load_dataset", "write_contact_sheet"]
