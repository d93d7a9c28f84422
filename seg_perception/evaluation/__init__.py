"""Measuring models: metrics, evaluation on labelled images and on bags, reports and plots."""
