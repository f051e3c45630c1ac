"""The Northwind Goods action server: custom actions over the shop's SQLite database."""
