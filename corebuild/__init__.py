"""corebuild: build cross-view (street description <-> aerial image) geo-localization datasets."""

__version__ = "0.1.0"
