"""Observability of a run across its legs: leg traces (``trace``), the X-Ray segments built from
them (``xray``), the leg a piece of code runs in (``legs``) and the EMF metrics of runs and orders
(``metrics``)."""
