from fastapi import FastAPI

from auth.tokens import shop_token

app = FastAPI(title="shop")


@app.get("/products/{product_id}")
async def product(product_id: str) -> dict[str, str]:
    return {"id": product_id, "token": shop_token(product_id)}
