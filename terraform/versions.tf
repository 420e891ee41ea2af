terraform {
  # 1.9: variable validation may refer to other values (enabled_functions is checked
  # against the manifests found under functions/).
  required_version = ">= 1.9"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.50, < 7"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
