"""TensorFlow-datasets builders that write ``array_record`` without TensorFlow.

All builders share one feature schema (image, label, id, group) and one ``_generate_examples``; a builder only
says how to read its ``Layout``. Unreadable images are skipped and listed in ``info.metadata['skipped']`` so a
build never dies on one bad file and never loses one silently.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxprobe.data import layouts, medmnist, sources, synthetic
from jaxprobe.data.samples import Layout, Sample, UnreadableImageError, read_rgb

VERSION = tfds.core.Version("1.0.0")


def feature_schema(class_names: list[str] | None) -> tfds.features.FeaturesDict:
    """uint8 RGB image at original size (PNG-encoded), class label, stable id and patient group."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=class_names) if class_names else tfds.features.ClassLabel(),
            "id": tfds.features.Text(),
            "group": tfds.features.Text(),
        }
    )


class LayoutBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose samples come from a ``Layout``; subclasses implement ``read_layout``."""

    VERSION = VERSION
    CLASS_NAMES: list[str] | None = None  # fixed by the public dataset; None: read from the layout
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the unpacked public download in the manual dir."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(self.__doc__ or "").strip(),
            features=feature_schema(self.class_names()),
            metadata=tfds.core.MetadataDict(),
        )

    def class_names(self) -> list[str] | None:
        return self.CLASS_NAMES

    def read_layout(self, manual_dir: Path | None) -> Layout:
        raise NotImplementedError

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = Path(dl_manager.manual_dir) if self.MANUAL_DOWNLOAD_INSTRUCTIONS else None
        layout = self.read_layout(manual_dir)
        if self.class_names() is None:
            self.info.features["label"].names = layout.class_names
        self.info.metadata["skipped"] = list(layout.skipped)
        if manual_dir is not None:  # written with the dataset, atomically: a prepared dataset always has it
            self.info.metadata[sources.SOURCE_KEY] = sources.describe(sources.input_files(layout), manual_dir)
        return {split: self._generate_examples(samples) for split, samples in layout.splits.items()}

    def _generate_examples(self, samples: list[Sample]):
        for sample in samples:
            try:
                pixels = read_rgb(sample.source)
            except UnreadableImageError as error:
                self.info.metadata["skipped"].append({"id": sample.id, "reason": str(error)})
                continue
            yield sample.id, {
                "image": Image.fromarray(pixels),
                "label": sample.label,
                "id": sample.id,
                "group": sample.group,
            }


class Busi(LayoutBuilder):
    """BUSI breast ultrasound (Al-Dhabyani et al. 2020): normal / benign / malignant; mask files excluded."""

    CLASS_NAMES = layouts.BUSI_CLASSES
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Unpack Dataset_BUSI_with_GT.zip into the manual dir."

    def read_layout(self, manual_dir: Path | None) -> Layout:
        return layouts.busi_layout(manual_dir)


class Covid19Ct(LayoutBuilder):
    """COVID19-CT (UCSD-AI4H): CT_COVID / CT_NonCOVID, with the official patient-level split lists."""

    CLASS_NAMES = layouts.COVID_CLASSES
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the COVID-CT repository (Images-processed/, Data-split/) in the manual dir."

    def read_layout(self, manual_dir: Path | None) -> Layout:
        return layouts.covid_ct_layout(manual_dir)


class ChestXray(LayoutBuilder):
    """Paediatric chest X-ray (Kermany et al. 2018): NORMAL / PNEUMONIA, official folders, patient ids."""

    CLASS_NAMES = layouts.CHEST_CLASSES
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Unpack the chest_xray archive (train/, test/, val/) into the manual dir."

    def read_layout(self, manual_dir: Path | None) -> Layout:
        return layouts.chest_xray_layout(manual_dir)


class ImageFolder(LayoutBuilder):
    """Any ``root/<class>/*`` or ``root/<split>/<class>/*`` tree; the config name tells trees apart."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Point the manual dir at the root of the class (or split/class) folders."
    BUILDER_CONFIGS = (tfds.core.BuilderConfig(name="default"),)

    def read_layout(self, manual_dir: Path | None) -> Layout:
        return layouts.image_folder_layout(manual_dir)


@dataclasses.dataclass
class MedmnistConfig(tfds.core.BuilderConfig):
    flag: str = "breastmnist"
    size: int = medmnist.BASE_SIZE


def medmnist_configs() -> list[MedmnistConfig]:
    table = medmnist.medmnist_table()
    return [
        MedmnistConfig(name=f"{flag}_{size}", flag=flag, size=size)
        for flag in table["flags"]
        if flag not in table["multi_label"]
        for size in table["sizes"]
    ]


class Medmnist(LayoutBuilder):
    """MedMNIST v2 / MedMNIST+ 2D datasets from their ``.npz`` files; config ``<flag>_<size>``."""

    BUILDER_CONFIGS = tuple(medmnist_configs())
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place <flag>.npz / <flag>_<size>.npz from MedMNIST in the manual dir."

    def class_names(self) -> list[str]:
        return list(medmnist.medmnist_table()["flags"][self.builder_config.flag])

    def read_layout(self, manual_dir: Path | None) -> Layout:
        return medmnist.medmnist_layout(manual_dir, self.builder_config.flag, self.builder_config.size)


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    spec: synthetic.SyntheticSpec = dataclasses.field(default_factory=synthetic.SyntheticSpec)


SYNTHETIC_CONFIGS = [
    SyntheticConfig(name="default", description="3 classes, 600 images, 128 px", spec=synthetic.SyntheticSpec(
        num_images=600, num_patients=200)),
    SyntheticConfig(name="small", description="3 classes, 120 images, 64 px: the demo and tests", spec=(
        synthetic.SyntheticSpec(num_images=120, num_patients=40, image_size=64))),
]


class SyntheticLesions(LayoutBuilder):
    """Procedural ultrasound-like lesion images (jaxprobe.data.synthetic); offline and seeded."""

    BUILDER_CONFIGS = tuple(SYNTHETIC_CONFIGS)
    MANUAL_DOWNLOAD_INSTRUCTIONS = None

    def class_names(self) -> list[str]:
        return synthetic.class_names(self.builder_config.spec.num_classes)

    def read_layout(self, manual_dir: Path | None) -> Layout:
        spec = self.builder_config.spec
        patients, labels = synthetic.patient_plan(spec)
        samples = [
            Sample(
                source=_SyntheticImage(spec, i, int(patients[i]), int(labels[i])),
                label=int(labels[i]),
                id=f"image_{i:05d}",
                group=f"patient_{patients[i]:04d}",
            )
            for i in range(spec.num_images)
        ]
        return Layout(self.class_names(), {layouts.FULL_SPLIT: samples})


@dataclasses.dataclass(frozen=True)
class _SyntheticImage:
    """A lazily rendered synthetic image (a callable ``ImageSource``)."""

    spec: synthetic.SyntheticSpec
    index: int
    patient: int
    label: int

    def __call__(self) -> np.ndarray:
        return synthetic.render_image(self.spec, self.index, self.patient, self.label)
