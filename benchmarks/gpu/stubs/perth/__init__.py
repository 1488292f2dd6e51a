"""Import stand-in for resemble-perth (36 MB); the benchmark times the pipeline before the watermark."""


class PerthImplicitWatermarker:
    def apply_watermark(self, wav, sample_rate=None, **_):
        return wav
