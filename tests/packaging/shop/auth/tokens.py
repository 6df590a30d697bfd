def shop_token(subject: str) -> str:
    return f"shop-{subject}"
