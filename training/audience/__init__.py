"""Offline evaluation of GetAudience's scorer (``sharerank eval-audience``)."""
