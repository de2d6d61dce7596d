"""Helpers of the Streamlit dashboard (``app.py``): functions over the library's results
(no Streamlit imports here; ``charts`` builds Altair specs), tested like the rest of simplan."""
