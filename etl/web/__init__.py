"""Web archives: WARC/WET records to documents (``warc``), and the main text of an HTML page (``extract``)."""
