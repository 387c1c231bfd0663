"""The Streamlit latent-space explorer for Real NVP (``streamlit run app/streamlit_app.py`` or ``nvp-app``)."""
