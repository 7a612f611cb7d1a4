"""GAN Influence Explorer. Start with: streamlit run app/main.py

The pages only call the engine (`influence`); long work runs as background jobs, and
the current run and removal set are kept in the store, so nothing is lost on refresh.
"""

import os
import sys

# Before the engine loads torch's OpenMP: the server computes beside its job workers, and threads that spin while
# waiting starve them (the workers, the CLI and the tests wait passively too; docs/method.md). A value set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import streamlit as st  # noqa: E402
from streamlit import config as st_config  # noqa: E402

from explorer import jobpanel, state, widgets  # noqa: E402
from influence.data.locations import ImagesMissing  # noqa: E402
from influence.errors import InfluenceError, StoreError  # noqa: E402

st.set_page_config(page_title="GAN Influence Explorer", page_icon="📊", layout="wide")
# Big numbers (st.metric) shrink with a narrow window and labels wrap: in a side column of a 1024 px screen or a
# projector, "-4.76e-7", "test ALL after cleansing" and "partly covers" were cut off, and a label's <p> (nowrap)
# ran over the next column's. Only <style>: it takes no room on the page.
st.html("<style>[data-testid='stMetricValue'] {font-size: clamp(1.3rem, 2.6vw, 2.25rem);}"
        " [data-testid='stMetricLabel'] .stMarkdownEllipsis, [data-testid='stMetricLabel'] p"
        " {white-space: normal !important; overflow: visible !important;}"
        " [data-testid='stMetricValue'] p {white-space: normal !important;}</style>")

# Loopback only unless asked: with a Streamlit that did not read app/.streamlit/config.toml this would serve the
# network. Nothing is shown then but the reason (also on the server's console).
problem = widgets.exposure_problem(st.get_option("server.address"), st_config.is_manually_set("server.address"))
if problem:
    print(problem, file=sys.stderr)
    st.error(problem, icon=":material/lock:")
    st.stop()

try:
    root = state.root()
except StoreError as e:
    st.error(f"{e}. Set GAN_INFLUENCE_STORE to a writable folder and restart the app.")
    st.stop()

pages = [
    st.Page(widgets.TRAIN_PAGE, title="Train or load", icon=":material/model_training:", default=True),
    st.Page(widgets.INFLUENCE_PAGE, title="Influence", icon=":material/bar_chart:", url_path="influence"),
    st.Page(widgets.CURATE_PAGE, title="Inspect and curate", icon=":material/grid_view:", url_path="curate"),
    st.Page(widgets.SAMPLES_PAGE, title="Generated samples", icon=":material/image_search:", url_path="samples"),
    st.Page(widgets.CLEANSE_PAGE, title="Cleanse and compare", icon=":material/cleaning_services:", url_path="cleanse"),
    st.Page(widgets.VALIDATE_PAGE, title="Validate", icon=":material/fact_check:", url_path="validate"),
    st.Page(widgets.PLAYGROUND_PAGE, title="2D playground", icon=":material/scatter_plot:", url_path="playground"),
]
page = st.navigation(pages)

with st.sidebar:
    st.markdown("### GAN Influence Explorer")
    st.caption("Which training images help or hurt a GAN? (ASGD-Influence, Terashita et al., ICLR 2021)")
    try:  # the sidebar is on every page: a store problem here must not take every page down
        widgets.run_picker(root)
        jobpanel.sidebar_list(root)
    except InfluenceError as e:
        st.error(str(e), icon=":material/error:")
    st.caption(f"Store: `{root}`")

widgets.relocated_flash()
try:
    page.run()
except ImagesMissing as e:  # moved images: the message and a form for their new place
    widgets.images_missing(root, e)
except InfluenceError as e:  # a problem the user can act on (bad input, damaged file): say it, no traceback
    st.error(str(e), icon=":material/error:")
