"""The reference Analysis Engine: prices, technical indicators and market regime."""
