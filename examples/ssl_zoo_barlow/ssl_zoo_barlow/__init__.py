"""Barlow Twins (Zbontar et al., 2021) as an ssl_zoo plugin."""
