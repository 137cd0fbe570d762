"""Sandbox tenant: an in-repo fake of the Microsoft Graph endpoints the jobs use."""
