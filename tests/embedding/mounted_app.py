"""What the README warns against: itemrooms' app mounted, so its lifespan never runs."""

from fastapi import FastAPI

from itemrooms.api.app import create_app

app = FastAPI(title="host")
app.mount("/rt", create_app())
