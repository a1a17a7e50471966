"""The Streamlit page's modes, one module each (`streamlit_app.py` lays the page out and dispatches): `image_mode`
(search by a photo), `text_mode` (search by words), `add_photos` (upload → queue → progress); `common` holds the API
client and the drawing and result-grid helpers they share."""
