"""Servers that itemrooms is compared with, each as small as the pattern it stands for."""
