"""The pyfunc's entry file for MLflow's models-from-code: MLflow runs this file to build the
model when a version is loaded, so the store holds code, JSON and weights only, and loading a
model never unpickles (a pickled ``python_model.pkl`` runs whatever its writer put in it).

Not imported by privgen itself: ``set_model`` below is the side effect MLflow asks of the file.
"""

import mlflow

from models.pyfunc import GeneratorModel

mlflow.models.set_model(GeneratorModel())
