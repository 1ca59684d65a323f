"""A trained net as a product: the image classifier, its MLflow pyfunc model and the registry."""
