"""CovidSeg Assist engine: weak slice labels -> pixel masks of COVID-19 lung infection. No Qt here."""

__version__ = "0.1.0"
